"""syncer: a local, queryable copy of Huawei Cloud IMS image catalogs with a durable change feed."""

__version__ = "0.1.0"
