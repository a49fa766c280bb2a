"""llmgw-jupyter."""


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab extension (for `jupyter labextension develop`)."""
    return [{"src": "labextension", "dest": "llmgw-jupyter"}]
