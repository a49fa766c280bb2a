"""The notebook side: magics, job handles and widgets over a gateway client.

Only magics and widget import IPython and ipywidgets; the server never imports this package.
"""

import logging

from llmgw_jupyter.kernel.client import (
    EmbeddedClient,
    GatewayCallError,
    GatewayClient,
    RestClient,
    connect,
)
from llmgw_jupyter.kernel.handle import JobError, JobHandle, JobResult

# The kernel side never lets Python's last-resort handler print from its loop thread into a cell.
logging.getLogger("llmgw_jupyter").addHandler(logging.NullHandler())

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
