"""One APIRouter per area of the runtime API."""
