class ConfigError(Exception):
    """An invalid configuration. `str()` is the one line shown to the user:
    `FILE: programs.NAME.FIELD: what is wrong`."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message
