"""Crystals: builders, periodic MD with the centre of mass fixed, structure recognition and
Einstein-crystal free energies (see docs/solids.md)."""
