"""rooms.handlers: being written (issue 3)."""

from core_api.events import Events
from core_api.http import Api

api = Api()
events = Events()
