"""Generators of synthetic annotated cell videos, all behind one interface (see ``generators.base``)."""
