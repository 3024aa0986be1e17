"""opencdp: an open-source Customer Data Platform."""

__version__ = "0.1.0"
