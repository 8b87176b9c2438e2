"""`kind = "postgres"`: PostgreSQL as a first-class program (spec.py: the config fields; kind.py:
the steps the runtime calls; firstboot.py, bootstrap.py, cluster.py, binaries.py: the work)."""
