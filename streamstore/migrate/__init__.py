"""Moving data that pydantic-redis or pydantic-aioredis stored into streamstore, as events."""

from streamstore.migrate.importer import ImportReport, Source, import_records, old_key_pattern

__all__ = ["ImportReport", "Source", "import_records", "old_key_pattern"]
