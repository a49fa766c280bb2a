"""The notebook side: magics, job handles and widgets over a gateway client.

Only magics and widget import IPython and ipywidgets; the server never imports this package.
"""

from llmgw_jupyter.kernel.client import (
    EmbeddedClient,
    GatewayCallError,
    GatewayClient,
    RestClient,
    connect,
)
from llmgw_jupyter.kernel.handle import JobError, JobHandle, JobResult

__all__ = [
    "EmbeddedClient",
    "GatewayCallError",
    "GatewayClient",
    "JobError",
    "JobHandle",
    "JobResult",
    "RestClient",
    "connect",
]
