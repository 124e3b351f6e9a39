"""SALMA reproduction kit: Mask-Biased Attention for referring segmentation on Sa2VA (InternVL + SAM-2).

The package holds every piece of logic; the numbered notebooks in ``notebooks/`` only call it.
See ``shared/DESIGN.md`` for the layout and REFERENCE.md for the method.
"""

__version__ = "0.1.0"
