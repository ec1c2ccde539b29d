"""costs: actual daily spend per scope, imported from FOCUS exports or pushed over the API."""
