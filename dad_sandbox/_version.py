"""The package version, kept in a leaf module so the image tag and metadata can read it cheaply."""

__version__ = "0.1.0"
