"""Evaluation: the paper's metrics, image (cIoU/gIoU) and video (J&F) evaluation, floors, and the instrumented forward."""
