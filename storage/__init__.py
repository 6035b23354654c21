"""Everything persistent: object store (S3 via the minio SDK), job/item records (Redis), key layout."""
