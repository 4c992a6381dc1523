"""syncd: keep local folders in sync with object storage (S3, GCS, Azure Blob, local folders)."""

__version__ = "0.1.0"
