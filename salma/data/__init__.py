"""Data: the SynRef generator, refer-format and video-format loaders, manifests, trivial predictors."""
