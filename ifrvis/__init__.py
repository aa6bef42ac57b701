"""ifrvis: Consistent Video Instance Segmentation with Inter-Frame Recurrent Attention."""

__version__ = "0.1.0"


def train(cfg, resume: bool = False) -> dict:
    """Run one training run end to end and return its final metrics (see `ifrvis.engine.train`)."""
    from ifrvis.engine.train import train as _train

    return _train(cfg, resume=resume)
