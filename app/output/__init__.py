"""Everything a predictor's result becomes on the way out: PNG masks, JSON (polygons, RLE),
overlays. Pure functions on numpy arrays and :mod:`app.results`; no HTTP, no model.

``encode`` is the stage the request timer and ``Server-Timing`` call ``encode``; the other
modules are its parts.
"""
