"""hive_app: the Genie / Agent service app run by hive-init inside the all-in-one images.

One package serves either service (HIVE_SERVICE=genie or agent): a FastAPI app on asyncpg
with a pgvector column per row. It tolerates its database being away: it answers 503 while
PostgreSQL is down or restarting and reconnects by itself.
"""

__version__ = "0.1.0"
