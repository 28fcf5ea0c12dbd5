"""CDS Hooks 2.0: discovery, prefetch templates, hook requests -> CheckRequest, JWT checks.

The web layer (service/web/cds_hooks.py) is a thin blueprint over this package; cards are
rendered by service/output/cards.py.
"""
