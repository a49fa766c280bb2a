"""llmgw-jupyter."""


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab extension (for `jupyter labextension develop`)."""
    return [{"src": "labextension", "dest": "llmgw-jupyter"}]


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext llmgw_jupyter``: the magics (imported lazily: the server never needs IPython)."""
    from llmgw_jupyter.kernel.magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    from llmgw_jupyter.kernel.magics import unload_ipython_extension as unload

    unload(ipython)


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    """The Jupyter server extension (imported lazily: kernels never need the server side)."""
    from llmgw_jupyter.server.app import LLMGatewayApp

    return [{"module": "llmgw_jupyter.server.app", "app": LLMGatewayApp}]
