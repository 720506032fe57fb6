"""What the simulated images look like: per image type, the fields and value domains of the
facts table (reference/ims-api-facts.md), generated deterministically.

An image is stored compactly (see :class:`syncer.simulator.catalog.Image`); its full JSON object
is composed at response time from layers, later ones winning:

1. the image type's constant fields (``__imagetype``, ``visibility``, ``protected``, ...);
2. an OS *profile* shared by many images (platform, OS version, ``__support_*`` flags, ...),
   chosen by a hash of the image id;
3. per-image fields derived from that hash (``__image_size``, ``checksum``, tags, owner of a
   shared image, product code of a market image, now and then a field unknown to the SDK);
4. the stored core (``id``, ``name``, ``status``, ``created_at``, ``updated_at``, ``active_at``);
5. explicit overrides set by ``Catalog.update``.

So a million images cost a few hundred bytes each, and any field can still be read without
building the whole object (:meth:`TypeShape.value`).
"""

from __future__ import annotations

import functools
import hashlib
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

IMAGE_TYPES: Final = ("gold", "private", "shared", "market")
STATUSES: Final = ("queued", "saving", "active", "killed", "deleted")

# Fixed, so that a seed always gives the same catalog (never "now"-relative).
SPAN_START: Final = int(datetime(2019, 1, 1, tzinfo=UTC).timestamp())
SPAN_END: Final = int(datetime(2024, 6, 1, tzinfo=UTC).timestamp())

PLATFORM_PROJECT_ID: Final = "1bed856811654c1cb661a6ca845ebc77"
DEFAULT_TENANT_PROJECT_ID: Final = "0605767e5f0025bd2f81c00c2e9c0d30"
SHARING_PROJECT_IDS: Final = (
    "7a1e3c5b9d2f4e6a8b0c1d2e3f4a5b6c",
    "c0ffee0000000000000000000000beef",
    "5e5e5e5e5e5e4d4d4d4d3c3c3c3c2b2b",
    "91b2c3d4e5f60718293a4b5c6d7e8f90",
)
MARKET_VENDOR_IDS: Final = (
    "4c7b9a1f0e2d3c5b6a798877665544aa",
    "f00dbabe11223344556677889900aabb",
)
ENTERPRISE_PROJECT_IDS: Final = (
    "0",
    "0",
    "0",
    "b3f1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
    "2d6a8e0c-4b1f-4c3d-9e5a-7f8b0c2d4e6f",
)
EMPTY_MD5: Final = "d41d8cd98f00b204e9800998ecf8427e"

_OS: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    ("CentOS", "Linux", ("CentOS 7.9 64bit", "CentOS 7.6 64bit", "CentOS 8.2 64bit")),
    ("Ubuntu", "Linux", ("Ubuntu 22.04 server 64bit", "Ubuntu 20.04 server 64bit")),
    ("Debian", "Linux", ("Debian GNU/Linux 11.1.0 64bit", "Debian GNU/Linux 10.2.0 64bit")),
    ("EulerOS", "Linux", ("EulerOS 2.5 64bit", "EulerOS 2.9 64bit")),
    ("Huawei Cloud EulerOS", "Linux", ("Huawei Cloud EulerOS 2.0 64bit",)),
    (
        "Windows",
        "Windows",
        (
            "Windows Server 2019 Datacenter 64bit English",
            "Windows Server 2016 Standard 64bit Chinese",
            "Windows Server 2022 Datacenter 64bit English",
        ),
    ),
    ("RedHat", "Linux", ("Red Hat Enterprise Linux 8.4 64bit",)),
    ("SUSE", "Linux", ("SUSE Linux Enterprise Server 15 SP3 64bit",)),
    ("OpenSUSE", "Linux", ("OpenSUSE 15.3 64bit",)),
    ("Oracle Linux", "Linux", ("Oracle Linux 8.4 64bit",)),
    ("Fedora", "Linux", ("Fedora 35 64bit",)),
    ("CoreOS", "Linux", ("CoreOS 2023.4.0 64bit",)),
    ("CentOS", "Linux", ("CentOS 6.10 32bit",)),
    ("Other", "Other", ("Other Linux(64 bit)",)),
)
_GPU_KVM: Final = ("V100_vGPU", "T4", "A100", "P2s")
_GPU_XEN: Final = ("M60_vGPU", "P100")
_FEATURES: Final = (
    '{"onekey_resetpasswd": "true"}',
    '{"onekey_resetpasswd": "true", "vbd_support": "true"}',
    '{"disk_hotplug": "true"}',
)

PRIVATE_NAMES: Final = (
    "web-server-{n}",
    "数据库-备份-{n}",
    "Ünïcode_image.{n}",
    "测试镜像 {n}",
    "app-build_{n}",
    "golden base {n}",
    "Ωmega-node-{n}",
    "镜像.{n}.prod",
    "café-pos_{n}",
)
_DESCRIPTIONS: Final = (
    "",
    "built by CI",
    "基础镜像，已安装监控代理",
    "hardened image for prod — do not delete",
    "données de test",
)
_TAG_KEYS: Final = ("env", "team", "owner", "项目", "cost-center")
_TAG_VALUES: Final = ("prod", "dev", "qa", "alice", "数据", "42")
_UNKNOWN_FIELDS: Final[tuple[tuple[str, Any], ...]] = (
    ("__quick_start", "true"),
    ("__support_live_resize", "true"),
    ("__image_location", "obs://ims-backend/images/segment-7"),
    ("__is_config_init", "true"),
    ("__extra_spec", {"pci_passthrough": "false", "numa_nodes": 2}),
    ("__image_cache_type", None),
)


@functools.lru_cache(maxsize=1 << 16)
def iso(t: int) -> str:
    """Whole seconds since the epoch → ``2018-09-06T14:03:27Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def new_image_id(rng: random.Random) -> str:
    """A random, well-formed UUID4 string drawn from ``rng`` (so a seed gives the same ids)."""
    h = f"{rng.getrandbits(128):032x}"
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


def image_hash(image_id: str) -> int:
    """512 stable bits from an image id: everything generated about an image comes from it."""
    return int.from_bytes(hashlib.blake2b(image_id.encode(), digest_size=64).digest(), "big")


class Bits:
    """Successive small random numbers taken from one integer (cheap, deterministic)."""

    __slots__ = ("h",)

    def __init__(self, h: int) -> None:
        self.h = h

    def take(self, n: int) -> int:
        """A number in ``range(n)``."""
        v = self.h % n
        self.h //= n
        return v

    def chance(self, one_in: int) -> bool:
        return self.take(one_in) == 0


def _make_profiles(image_type: str, seed: int, count: int = 48) -> list[dict[str, Any]]:
    rng = random.Random(f"profiles/{seed}/{image_type}")
    profiles = []
    for _ in range(count):
        platform, os_type, versions = rng.choice(_OS)
        version = rng.choice(versions)
        arm = os_type == "Linux" and rng.random() < 0.15
        p: dict[str, Any] = {
            "__os_type": os_type,
            "__platform": platform,
            "__os_version": version,
            "__os_bit": "32" if "32bit" in version else "64",
            "min_ram": rng.choice((0, 0, 1024, 2048, 4096)),
            "min_disk": 40 if os_type != "Windows" else rng.choice((40, 50)),
            "disk_format": "zvhd2",
            "virtual_env_type": "FusionCompute",
            "hw_firmware_type": "uefi" if arm else rng.choice(("bios", "bios", "uefi")),
            "__lazyloading": rng.choice(("true", "true", "false", "True")),
            "architecture": "arm" if arm else "x86",
        }
        if arm:
            p["__support_arm"] = "true"
        gpu = rng.random()
        if gpu < 0.08:
            p["__support_kvm_gpu_type"] = rng.choice(_GPU_KVM)
        elif gpu < 0.12:
            p["__support_xen_gpu_type"] = rng.choice(_GPU_XEN)
        elif gpu < 0.15:
            p["__support_xen_hana"] = "true"
        else:
            p["__support_kvm"] = "true"
            if rng.random() < 0.3:
                p["__support_xen"] = "true"
            elif rng.random() < 0.1:
                p["__support_kvm_infiniband"] = "true"
        for flag in (
            "__support_largememory",
            "__support_diskintensive",
            "__support_highperformance",
        ):
            if rng.random() < 0.2:
                p[flag] = "true"
        if os_type == "Windows":
            p["__support_fc_inject"] = "true"
        if rng.random() < 0.5:
            p["__os_feature_list"] = rng.choice(_FEATURES)
        if rng.random() < 0.3:
            p["__support_agent_list"] = rng.choice(("hss,ces", "hss", "ces"))
        if rng.random() < 0.2:
            p["hw_vif_multiqueue_enabled"] = "true"
        if not arm and rng.random() < 0.1:
            p["__support_amd"] = "true"
        if "__support_kvm" in p and rng.random() < 0.1:
            passthrough = rng.choice(("hisriov", "hivirtionet"))
            p[f"__support_kvm_hi1822_{passthrough}"] = "true"
        if rng.random() < 0.05:
            p["os_shutdown_timeout"] = rng.choice(("60", "120", "300"))
        if image_type in ("private", "shared"):
            roll = rng.random()
            if roll < 0.12:
                p.update(disk_format=rng.choice(("qcow2", "vhd", "raw", "zvhd")))
            elif roll < 0.16:
                p.update(disk_format="iso", virtual_env_type="IsoImage")
            elif roll < 0.22:
                p.update(virtual_env_type="DataImage", min_disk=rng.choice((10, 100, 500)))
            elif roll < 0.26:
                p.update(virtual_env_type="Ironic")
            p["min_disk"] = max(p["min_disk"], rng.choice((10, 40, 40, 60, 100, 1024)))
        elif image_type == "gold" and rng.random() < 0.08:
            p["virtual_env_type"] = "Ironic"
        profiles.append(p)
    return profiles


def _base(image_type: str) -> dict[str, Any]:
    public = image_type in ("gold", "market")
    return {
        "schema": "/v2/schemas/image",
        "__image_source_type": "uds",
        "container_format": "bare",
        "__imagetype": image_type,
        "visibility": {"gold": "public", "market": "public"}.get(image_type, image_type),
        "protected": public,
        "__isregistered": "true",
        "virtual_size": None,
        "tags": [],
        "min_ram": 0,
        "min_disk": 40,
        "size": 0,
    }


VARIANTS: Final = 4096  # per image type: pools of per-image field sets, picked by hash
MUTABLE_KEYS: Final = ("tags", "__extra_spec")  # layer values render() must copy


class TypeShape:
    """How the images of one type look: constants, OS profiles, per-image variants."""

    def __init__(self, image_type: str, seed: int, tenant_project_id: str) -> None:
        self.image_type = image_type
        self.tenant = tenant_project_id
        self.base = _base(image_type)
        self.profiles = _make_profiles(image_type, seed)
        derive: Callable[[Bits], dict[str, Any]] = getattr(self, f"_d_{image_type}")
        self.variants: list[dict[str, Any]] = []
        for i in range(VARIANTS):
            b = Bits(image_hash(f"variant/{seed}/{image_type}/{i}"))
            v = derive(b)
            if b.chance(40):
                key, value = _UNKNOWN_FIELDS[b.take(len(_UNKNOWN_FIELDS))]
                v[key] = value
            self.variants.append(v)
        # every key the derived layer may produce (so value() knows when to look there)
        self.derived_keys = frozenset(("__image_size", "checksum", "file", "self", "size")).union(
            *self.variants
        )

    def profile(self, h: int) -> dict[str, Any]:
        return self.profiles[(h >> 448) % len(self.profiles)]

    def derived(self, image_id: str, h: int) -> dict[str, Any]:
        """The per-image layer: a shared variant plus the fields unique to this image."""
        d = dict(self.variants[(h >> 384) % VARIANTS])
        image_size = (1 + h % 60) * 1_073_741_824 - ((h >> 8) % 1_000_000) * 512
        d["__image_size"] = str(image_size)
        d["checksum"] = EMPTY_MD5 if (h >> 32) % 3 == 0 else f"{(h >> 40) & ((1 << 128) - 1):032x}"
        d["file"] = f"/v2/images/{image_id}/file"
        d["self"] = f"/v2/images/{image_id}"
        if (h >> 170) % 5 == 0:
            d["size"] = image_size
        return d

    def name(self, h: int) -> str:
        """The generated name of an image (used until a name is set explicitly)."""
        if self.image_type == "gold":
            version = str(self.profile(h)["__os_version"])
            return version if (h >> 180) % 3 else f"{version} ({40 + 10 * ((h >> 190) % 5)}GB)"
        if self.image_type == "market":
            return f"{self.profile(h)['__platform']} 应用市场 LAMP-{(h >> 180) % 97}"
        template = PRIVATE_NAMES[(h >> 180) % len(PRIVATE_NAMES)]
        return template.format(n=(h >> 200) % 100_000)

    def _d_gold(self, b: Bits) -> dict[str, Any]:
        return {
            "owner": PLATFORM_PROJECT_ID,
            "__data_origin": "",
            "__originalimagename": "",
            "__backup_id": "",
            "__description": "",
        }

    def _origin(self, b: Bits) -> dict[str, Any]:
        kind = b.take(4)
        parent = f"{b.take(1 << 32):08x}-{b.take(1 << 16):04x}-4000-8000-{b.take(1 << 48):012x}"
        if kind == 0:
            return {"__data_origin": f"instance,{parent}", "__originalimagename": parent}
        if kind == 1:
            return {
                "__data_origin": f"file,obs://images-{b.take(100)}/upload-{b.take(9999)}.qcow2",
                "__originalimagename": "",
                "__root_origin": "file",
            }
        if kind == 2:
            return {"__data_origin": f"image,{parent}", "__originalimagename": parent}
        return {"__data_origin": f"server_backup,{parent}", "__backup_id": parent}

    def _personal(self, b: Bits) -> dict[str, Any]:
        d: dict[str, Any] = self._origin(b)
        d["__description"] = _DESCRIPTIONS[b.take(len(_DESCRIPTIONS))]
        d["enterprise_project_id"] = ENTERPRISE_PROJECT_IDS[b.take(len(ENTERPRISE_PROJECT_IDS))]
        ntags = b.take(4) if b.chance(2) else 0
        d["tags"] = sorted(
            {f"{_TAG_KEYS[b.take(len(_TAG_KEYS))]}.{_TAG_VALUES[b.take(6)]}" for _ in range(ntags)}
        )
        if b.chance(10):
            d["__system__cmkid"] = (
                f"{b.take(1 << 32):08x}-0000-4000-8000-00000000{b.take(9999):04d}"
            )
        if b.chance(8):
            d["__whole_image"] = "true"
        if b.chance(6):
            d["__image_displayname"] = f"display-{b.take(1000)}"
        if b.chance(12):
            d["max_ram"] = str(1024 * (1 + b.take(64)))
        if b.chance(20):
            d["__sequence_num"] = "0"
        return d

    def _d_private(self, b: Bits) -> dict[str, Any]:
        d = self._personal(b)
        d["owner"] = self.tenant
        d["__system_support_market"] = b.chance(4)
        return d

    def _d_shared(self, b: Bits) -> dict[str, Any]:
        d = self._personal(b)
        d["owner"] = self.tenant if b.chance(5) else SHARING_PROJECT_IDS[b.take(4)]
        return d

    def _d_market(self, b: Bits) -> dict[str, Any]:
        d: dict[str, Any] = {
            "owner": MARKET_VENDOR_IDS[b.take(len(MARKET_VENDOR_IDS))],
            "__data_origin": "",
            "__originalimagename": "",
            "__backup_id": "",
            "__description": "KooGallery image",
            "__productcode": f"00301-{b.take(1_000_000):06d}-0--0",
            "__is_offshelved": "true" if b.chance(10) else "false",
            "__system_support_market": True,
        }
        if b.chance(2):
            d["__account_code"] = f"market-{b.take(100_000):05d}"
        return d

    def member_status(self, owner: Any, h: int) -> str | None:
        """Our member status for a shared image someone else owns (None: not shared with us)."""
        if self.image_type != "shared" or owner == self.tenant:
            return None
        return ("accepted", "accepted", "pending", "rejected")[(h >> 500) % 4]
