"""Acceptance: the stock SDMX clients read a running Tabadul hub.

Usage: python sdmx_clients.py BASE_URL TOKEN
  BASE_URL  the hub's SDMX root, e.g. http://127.0.0.1:8080/sdmx

Uses only the clients' public API: sdmx1 with a source definition (the
configuration every sdmx1 user writes for a new service) and pysdmx's
readers on the hub's URLs. Prints one JSON line with what it read; exits
non-zero on any failure.
"""

import json
import sys

import pandas as pd
import sdmx
from pysdmx.io import get_datasets, read_sdmx

base, token = sys.argv[1], sys.argv[2]
out = {}

# --- sdmx1 -----------------------------------------------------------------
sdmx.add_source({
    "id": "ALO",
    "name": "Tabadul hub (ALO)",
    "url": base,
    "supports": {"preview": False, "provisionagreement": False, "structure-specific data": True},
})
client = sdmx.Client("ALO")
client.session.headers.update({"Authorization": "Bearer " + token})

flows = client.dataflow()
out["sdmx1_dataflows"] = sorted(flows.dataflow.keys())

dsd_msg = client.datastructure("DSD_UNE_RATE")
dsd = dsd_msg.structure["DSD_UNE_RATE"]
out["sdmx1_dimensions"] = [d.id for d in dsd.dimensions.components]
out["sdmx1_codelists"] = sorted(dsd_msg.codelist.keys())
out["sdmx1_sex_codes"] = sorted(c.id for c in dsd_msg.codelist["CL_SEX"])

data = client.data("UNE_RATE", key="MAR+JOR.F+M.Y_GE15._T", params={"startPeriod": "2022", "endPeriod": "2024"}, dsd=dsd)
series = sdmx.to_pandas(data)
out["sdmx1_rows"] = int(len(series))
out["sdmx1_values"] = {".".join(str(x) for x in idx): float(v) for idx, v in series.items()}

# Structure-specific data, negotiated by media type.
ss = client.get(
    resource_type="data",
    resource_id="UNE_RATE",
    key="MAR+JOR.F+M.Y_GE15._T",
    params={"startPeriod": "2022", "endPeriod": "2024"},
    dsd=dsd,
    headers={"Accept": "application/vnd.sdmx.structurespecificdata+xml;version=2.1", "Authorization": "Bearer " + token},
)
out["sdmx1_ss_rows"] = int(len(sdmx.to_pandas(ss)))

# --- pysdmx ----------------------------------------------------------------
structure_url = base + "/dataflow/ALO/UNE_RATE/latest?references=all"
msg = read_sdmx(base + "/dataflow")
out["pysdmx_dataflows"] = sorted(df.id for df in msg.get_dataflows())
structures = read_sdmx(base + "/datastructure/ALO/DSD_UNE_RATE/latest")
out["pysdmx_dsds"] = sorted(d.id for d in structures.get_data_structure_definitions())
csv_url = base + "/data/ALO,UNE_RATE,latest/MAR+JOR.F+M.Y_GE15._T?startPeriod=2022&endPeriod=2024&format=sdmx-csv2"
datasets = get_datasets(csv_url, structure_url)
frame = datasets[0].data
assert isinstance(frame, pd.DataFrame)
out["pysdmx_rows"] = int(len(frame))
out["pysdmx_columns"] = list(frame.columns)
out["pysdmx_values"] = {
    ".".join(str(r[c]) for c in ["REF_AREA", "SEX", "AGE", "REGION", "TIME_PERIOD"]): float(r["OBS_VALUE"])
    for _, r in frame.iterrows()
}
print(json.dumps(out))
