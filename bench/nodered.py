"""Peer (c): Node-RED 4.1 with node-red-contrib-influxdb, headless, from a bench-local install.

Installed with `python -m bench --setup-node-red` (npm, into bench/.node/, git-ignored).
The flow is mqtt in -> json -> function -> influxdb batch. The function node is needed
because the `influxdb batch` node writes each input message as one request: it maps each
reading to a point and batches 5000 points or one second, like peer (b).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

NODE_DIR = Path(__file__).resolve().parent / ".node"
RED_JS = NODE_DIR / "node_modules" / "node-red" / "red.js"
INFLUX_NODE = NODE_DIR / "node_modules" / "node-red-contrib-influxdb"
PACKAGES = ("node-red@4.1", "node-red-contrib-influxdb@0.7")  # 4.1: the last for Node.js 20
NPM_TIMEOUT_S = 900.0
# Node ids: Node-RED takes any property value equal to a node id for a reference to it
# (an id "json" clashes with the json node's type), so they look like its own hex ids.
INFLUX_CONFIG_ID = "b000000000000017"

# Maps a reading to a point and keeps a batch in the node's (in-memory) context.
FUNCTION = """\
const parts = msg.topic.split('/');
const kind = parts[parts.length - 3], device = parts[parts.length - 2];
const measurement = {'water-level': 'water_level', 'air-quality': 'air_quality',
                     'traffic': 'traffic'}[kind];
const items = Array.isArray(msg.payload) ? msg.payload : [msg.payload];
const batch = context.get('batch');
for (const reading of items) {
    const fields = {};
    for (const key in reading) {
        if (key !== 'ts' && typeof reading[key] === 'number') fields[key] = reading[key];
    }
    batch.push({measurement, tags: {device_id: device}, fields,
                timestamp: Math.round(reading.ts * 1e6)});
}
if (batch.length >= 5000) {
    context.set('batch', []);
    return {payload: batch};
}
return null;
"""
INITIALIZE = """\
context.set('batch', []);
context.set('timer', setInterval(() => {
    const batch = context.get('batch');
    if (batch.length) {
        context.set('batch', []);
        node.send({payload: batch});
    }
}, 1000));
"""
FINALIZE = "clearInterval(context.get('timer'));\n"


def installed() -> bool:
    return RED_JS.exists() and INFLUX_NODE.exists()


def why_missing() -> str:
    """Why Node-RED cannot run here, for the report."""
    node = shutil.which("node")
    if node is None:
        return "Node.js is not installed (apt-get install nodejs npm)"
    if not installed():
        return f"not installed in {NODE_DIR}: run `python -m bench --setup-node-red`"
    return ""


def setup() -> None:
    """`npm install` the pinned packages into bench/.node/ (needs the npm registry)."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found: apt-get install nodejs npm (Node.js >= 18)")
    NODE_DIR.mkdir(exist_ok=True)
    manifest = NODE_DIR / "package.json"
    if not manifest.exists():
        manifest.write_text('{"name": "siaga-bench-node", "private": true}\n')
    subprocess.run([npm, "install", "--no-audit", "--no-fund", *PACKAGES], cwd=NODE_DIR,
                   check=True, timeout=NPM_TIMEOUT_S)


def version(package: str = "node-red") -> str:
    """The installed version of `package` in bench/.node/, or "?"."""
    manifest = NODE_DIR / "node_modules" / package / "package.json"
    return str(json.loads(manifest.read_text())["version"]) if manifest.exists() else "?"


def flow(*, mqtt_port: int, client_id: str, topic: str, influx_port: int,
         database: str) -> list[dict[str, object]]:
    """The flow: persistent-session QoS 1 subscription, JSON, batching, InfluxDB 1.x."""
    tab, broker, mqtt_in, to_json, points, write = (
        f"b0000000000000{suffix}" for suffix in ("a1", "b2", "c3", "d4", "e5", "f6"))
    return [
        {"id": tab, "type": "tab", "label": "bench"},
        {"id": broker, "type": "mqtt-broker", "name": "siaga-bench", "broker": "127.0.0.1",
         "port": str(mqtt_port), "clientid": client_id, "autoConnect": True, "usetls": False,
         "protocolVersion": "4", "keepalive": "60", "cleansession": False,
         "autoUnsubscribe": False, "birthTopic": "", "closeTopic": "", "willTopic": ""},
        {"id": mqtt_in, "type": "mqtt in", "z": tab, "topic": topic, "qos": "1",
         "datatype": "utf8", "broker": broker, "nl": False, "rap": True, "rh": 0,
         "inputs": 0, "wires": [[to_json]]},
        {"id": to_json, "type": "json", "z": tab, "property": "payload", "action": "obj",
         "pretty": False, "wires": [[points]]},
        {"id": points, "type": "function", "z": tab, "name": "points, batch 5000 or 1 s",
         "func": FUNCTION, "initialize": INITIALIZE, "finalize": FINALIZE, "outputs": 1,
         "timeout": 0, "noerr": 0, "libs": [], "wires": [[write]]},
        {"id": write, "type": "influxdb batch", "z": tab, "influxdb": INFLUX_CONFIG_ID,
         "precision": "u", "retentionPolicy": "", "name": "", "database": "",
         "precisionV18FluxV20": "ms", "retentionPolicyV18Flux": "", "org": "", "bucket": "",
         "wires": []},
        {"id": INFLUX_CONFIG_ID, "type": "influxdb", "hostname": "127.0.0.1",
         "port": str(influx_port), "protocol": "http", "database": database, "name": "",
         "usetls": False, "tls": "", "influxdbVersion": "1.x", "url": "",
         "rejectUnauthorized": True, "timeout": "10"},
    ]


SETTINGS = """\
// Headless and offline: no editor, no admin API, no telemetry, no installs.
module.exports = {{
    uiHost: "127.0.0.1",
    uiPort: {port},
    flowFile: "flows.json",
    credentialSecret: false,
    disableEditor: true,
    httpAdminRoot: false,
    httpNodeRoot: false,
    telemetry: {{enabled: false}},
    diagnostics: {{enabled: false, ui: false}},
    externalModules: {{autoInstall: false, palette: {{allowInstall: false}},
                       modules: {{allowInstall: false}}}},
    editorTheme: {{projects: {{enabled: false}}}},
    contextStorage: {{default: {{module: "memory"}}}},
    logging: {{console: {{level: "info", metrics: false, audit: false}}}},
}};
"""


def prepare(user_dir: Path, *, port: int, mqtt_port: int, client_id: str, topic: str,
            influx_port: int, database: str) -> list[str]:
    """Write the user directory (settings, flow, credentials); return the command to run."""
    user_dir.mkdir(parents=True, exist_ok=True)
    modules = user_dir / "node_modules"
    if not modules.exists():
        modules.symlink_to(NODE_DIR / "node_modules", target_is_directory=True)
    (user_dir / "settings.js").write_text(SETTINGS.format(port=port))
    nodes = flow(mqtt_port=mqtt_port, client_id=client_id, topic=topic,
                 influx_port=influx_port, database=database)
    (user_dir / "flows.json").write_text(json.dumps(nodes, indent=1))
    (user_dir / "flows_cred.json").write_text(
        json.dumps({INFLUX_CONFIG_ID: {"username": "", "password": ""}}))
    node = shutil.which("node") or "node"
    return [node, str(RED_JS), "--no-telemetry", "--userDir", str(user_dir),
            "--settings", str(user_dir / "settings.js"), "--port", str(port)]
