"""notifications: being written (see issue 2)."""

from core_api.http import Api

api = Api()
