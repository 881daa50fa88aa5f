"""Implementation of :mod:`scfeeds.portal` (the simulated supplier portal)."""
