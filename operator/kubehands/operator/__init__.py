"""The kopf operator for `Sandbox` resources: `kopf run -m kubehands.operator` or `kubehands operator`.

Importing the package registers the handlers (kopf's module loading relies on that).
"""

from kubehands.operator import handlers, startup  # noqa: F401  (registration side effect)
