"""The site inventory: load once, validate, then only typed frozen objects."""

from deploy.inventory.errors import InventoryError
from deploy.inventory.loader import load_site
from deploy.inventory.model import Host, Site, state_dir_for

__all__ = ["Host", "InventoryError", "Site", "load_site", "state_dir_for"]
