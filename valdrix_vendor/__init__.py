"""Third-party files shipped unchanged with Valdrix Gate (kept apart from its own code), served so that the
API explorer works air-gapped. `swagger_ui/`: swagger-ui-dist 5.36.0 from the npm registry (Apache-2.0)."""

from pathlib import Path

SWAGGER_UI = Path(__file__).parent / "swagger_ui"
