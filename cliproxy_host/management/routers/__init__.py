"""One APIRouter per resource of the management API; management.app includes them in order."""
