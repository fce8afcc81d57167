class ConfigError(ValueError):
    """Bad user input: names the field and what is allowed."""
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
