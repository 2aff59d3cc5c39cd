"""The servers segserve is compared with, built on the same weights and the same pipeline."""
