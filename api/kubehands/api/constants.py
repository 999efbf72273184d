"""Names of the gateway's API-key Secrets. The Sandbox API's come from `kubehands.crd.constants`, those a /start
writes from `kubehands.spec.constants`."""

from kubehands.crd.constants import GROUP

LABEL_API_KEY = f"{GROUP}/api-key"  # "true" on every API-key Secret
LABEL_KEY_NAME = f"{GROUP}/key-name"
COMPONENT_API_KEY = "api-key"
API_KEY_SECRET_PREFIX = "kh-apikey-"
