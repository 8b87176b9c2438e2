"""`kind = "postgres"`: PostgreSQL as a first-class program (spec.py: the config fields; kind.py:
the steps the runtime calls; firstboot.py, bootstrap.py, binaries.py, and for the data directory
layout.py (staged first-boot layout), ownership.py, pidfile.py (postmaster.pid), processes.py
(finding and ending PostgreSQL's processes): the work)."""
