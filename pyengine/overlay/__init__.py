"""Runtime changes on top of the bundle: kill switches and limit overrides added through the admin API."""
