"""hive-containers: the host-side manager of the Genie and Agent containers (up, down, restart,
status, logs) through their compose files, with Docker or podman, and their real health."""
