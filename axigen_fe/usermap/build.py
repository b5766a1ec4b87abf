"""Config -> live user maps (with caches), one per [[usermap]], sharing LDAP connectors."""

from __future__ import annotations

from typing import Any

from axigen_fe.config.model import NodeConfiguration, UserMapType
from axigen_fe.usermap.cache import CachingUserMap
from axigen_fe.usermap.file import FileUserMap
from axigen_fe.usermap.interface import IUserMap


class UserMaps:
    """The node's maps by name, and the connectors they use (closed on shutdown)."""

    def __init__(self, reactor: Any, config: NodeConfiguration) -> None:
        self._connectors: dict[str, Any] = {}
        self.maps: dict[str, IUserMap] = {}
        for name, cfg in config.usermaps.items():
            inner: IUserMap
            if cfg.type is UserMapType.FILE:
                assert cfg.path is not None
                inner = FileUserMap(name, cfg.path, reactor)
            else:
                from axigen_fe.ldap.connector import LDAPConnector
                from axigen_fe.usermap.ldap_bind import LDAPBindUserMap
                from axigen_fe.usermap.ldap_password import LDAPPasswordUserMap

                assert cfg.connector is not None
                ccfg = config.connectors[cfg.connector]
                connector = self._connectors.get(cfg.connector)
                if connector is None:
                    connector = self._connectors[cfg.connector] = LDAPConnector(reactor, ccfg)
                if cfg.type is UserMapType.LDAP_PASSWORD:
                    inner = LDAPPasswordUserMap(name, connector, ccfg)
                else:
                    inner = LDAPBindUserMap(name, connector, ccfg)
            if cfg.cache_ttl > 0 or cfg.negative_cache_ttl > 0:
                inner = CachingUserMap(inner, reactor, cfg.cache_ttl, cfg.negative_cache_ttl)
            self.maps[name] = inner

    async def close(self) -> None:
        for c in self._connectors.values():
            await c.close()
