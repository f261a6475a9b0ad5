"""Synthetic B2B-marketplace usage events, generated inside DuckDB (no Python row loops).

Guarantees: deterministic given ``seed`` (every value is a hash of the row number and the seed);
written atomically (temporary file, then rename); fast (tens of millions of rows per minute).

Shape: buyers with e-mail, phone, IP and device id; cities with Zipf-like popularity; a two-level
category tree; event types search/view/enquiry/call/order; timestamps over ~6 months; log-normal
order values with rare outliers; a small share of very heavy users (user 0 is the heaviest).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import ConfigError, ReleaseError

CITIES = [
    "Mumbai", "Delhi", "Bengaluru", "Hyderabad", "Ahmedabad", "Chennai", "Kolkata", "Surat", "Pune",
    "Jaipur", "Lucknow", "Kanpur", "Nagpur", "Indore", "Thane", "Bhopal", "Visakhapatnam",
    "Pimpri-Chinchwad", "Patna", "Vadodara", "Ghaziabad", "Ludhiana", "Agra", "Nashik", "Faridabad",
    "Meerut", "Rajkot", "Kalyan-Dombivli", "Vasai-Virar", "Varanasi", "Srinagar", "Aurangabad",
    "Dhanbad", "Amritsar", "Navi Mumbai", "Prayagraj", "Ranchi", "Howrah", "Coimbatore", "Jabalpur",
    "Gwalior", "Vijayawada", "Jodhpur", "Madurai", "Raipur", "Kota", "Guwahati", "Chandigarh",
    "Solapur", "Hubballi-Dharwad", "Bareilly", "Moradabad", "Mysuru", "Gurugram", "Aligarh",
    "Jalandhar", "Tiruchirappalli", "Bhubaneswar", "Salem", "Mira-Bhayandar", "Warangal", "Thiruvananthapuram",
    "Guntur", "Bhiwandi", "Saharanpur", "Gorakhpur", "Bikaner", "Amravati", "Noida", "Jamshedpur",
    "Bhilai", "Cuttack", "Firozabad", "Kochi", "Nellore", "Bhavnagar", "Dehradun", "Durgapur",
    "Asansol", "Rourkela", "Nanded", "Kolhapur", "Ajmer", "Akola", "Gulbarga", "Jamnagar", "Ujjain",
    "Loni", "Siliguri", "Jhansi", "Ulhasnagar", "Jammu", "Sangli", "Mangaluru", "Erode", "Belagavi",
    "Ambattur", "Tirunelveli", "Malegaon", "Gaya", "Udaipur", "Kakinada", "Davanagere", "Kozhikode",
    "Maheshtala", "Rajpur Sonarpur", "Rajahmundry", "Bokaro", "South Dumdum", "Bellary", "Patiala",
    "Gopalpur", "Agartala", "Bhagalpur", "Muzaffarnagar", "Bhatpara", "Panihati", "Latur", "Dhule",
    "Tirupati", "Rohtak", "Korba", "Bhilwara", "Berhampur", "Muzaffarpur", "Ahmednagar", "Mathura",
    "Kollam", "Avadi", "Kadapa", "Kamarhati", "Sambalpur", "Bilaspur", "Shahjahanpur", "Satara",
    "Bijapur", "Rampur", "Shivamogga", "Chandrapur", "Junagadh", "Thrissur", "Alwar", "Bardhaman",
    "Kulti", "Nizamabad", "Parbhani", "Tumakuru", "Khammam", "Ozhukarai", "Bihar Sharif", "Panipat",
    "Darbhanga", "Bally", "Aizawl", "Dewas", "Ichalkaranji", "Karnal", "Bathinda", "Jalna", "Eluru",
    "Barasat", "Kirari Suleman Nagar", "Purnia", "Satna", "Mau", "Sonipat", "Farrukhabad", "Sagar",
    "Rourkela Steel City", "Durg", "Imphal", "Ratlam", "Hapur", "Arrah", "Anantapur", "Karimnagar",
    "Etawah", "Ambarnath", "North Dumdum", "Bharatpur", "Begusarai", "New Delhi", "Gandhidham",
    "Baranagar", "Tiruvottiyur", "Pondicherry", "Sikar", "Thoothukudi", "Rewa", "Mirzapur", "Raichur",
    "Pali", "Ramagundam", "Haridwar", "Vijayanagaram", "Katihar", "Nagercoil", "Sri Ganganagar",
    "Karawal Nagar", "Mango", "Thanjavur", "Bulandshahr", "Uluberia", "Murwara", "Sambhal", "Singrauli",
    "Nadiad", "Secunderabad", "Naihati", "Yamunanagar", "Bidhannagar", "Pallavaram", "Bidar", "Munger",
    "Panchkula", "Burhanpur", "Raurkela Industrial Township", "Kharagpur", "Dindigul", "Gandhinagar",
    "Hospet", "Nangloi Jat", "Malda", "Ongole", "Deoghar", "Chapra", "Haldia", "Khandwa", "Nandyal",
    "Morena", "Amroha", "Anand", "Bhind", "Bhalswa Jahangir Pur", "Madhyamgram", "Bhiwani",
    "Berhampore", "Ambala", "Morbi", "Fatehpur", "Raebareli", "Khora", "Chittoor", "Bhusawal",
    "Orai", "Bahraich", "Phusro", "Vellore", "Mehsana", "Raiganj", "Sirsa", "Danapur", "Serampore",
    "Sultan Pur Majra", "Guna", "Jaunpur", "Panvel", "Shivpuri", "Surendranagar Dudhrej", "Unnao",
    "Chinsurah", "Alappuzha", "Kottayam", "Machilipatnam", "Shimla", "Adoni", "Udupi", "Tenali",
    "Proddatur", "Saharsa", "Hindupur", "Sasaram", "Hajipur", "Bhimavaram", "Kumbakonam", "Dehri",
    "Madanapalle", "Siwan", "Bettiah", "Guntakal", "Srikakulam", "Motihari", "Dharmavaram", "Gudivada",
    "Phagwara", "Pudukkottai", "Hosur", "Narasaraopet", "Suryapet", "Miryalaguda", "Tadipatri",
    "Karaikudi", "Kishanganj", "Jamalpur", "Ballia", "Kavali", "Tadepalligudem", "Amaravati",
    "Buxar", "Tezpur", "Jehanabad", "Aurangabad (Bihar)", "Gangtok",
]

CATEGORIES = [
    ("Industrial Machinery", ["Pumps", "Compressors", "CNC Machines", "Packaging Machines"]),
    ("Building & Construction", ["Cement", "TMT Bars", "Tiles", "Paints"]),
    ("Electronics & Electrical", ["Cables", "Switchgear", "Solar Panels", "LED Lights"]),
    ("Chemicals", ["Solvents", "Dyes", "Fertilizers", "Adhesives"]),
    ("Apparel & Textiles", ["Cotton Fabric", "Sarees", "Uniforms", "Yarn"]),
    ("Food & Agriculture", ["Rice", "Spices", "Pulses", "Edible Oil"]),
    ("Packaging", ["Corrugated Boxes", "Plastic Films", "Labels"]),
    ("Medical & Healthcare", ["Diagnostic Kits", "Hospital Furniture", "Surgical Gloves"]),
    ("Automobile Parts", ["Bearings", "Tyres", "Batteries", "Filters"]),
    ("Furniture", ["Office Chairs", "Modular Kitchens", "Steel Almirahs"]),
    ("Office Supplies", ["Paper", "Printers", "Stationery"]),
    ("Logistics Services", ["Freight", "Warehousing", "Courier"]),
]

# Writing the Parquet file dominates generation. Identifier columns (e-mail, phone, IP, device) have
# about one value per user, so DuckDB's default attempt to dictionary-encode them always fails after
# building a large dictionary; a small limit skips that work (measured: about 1.8x less CPU per 1M
# rows) and keeps dictionary encoding for the low-cardinality columns (city, category, event type).
COPY_OPTIONS = "FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 1000000, DICTIONARY_SIZE_LIMIT 4096"

EVENT_TYPES = [("search", 0.45), ("view", 0.27), ("enquiry", 0.13), ("call", 0.09), ("order", 0.06)]


def _sql_list(values: list[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


WIDE_CITIES, WIDE_CATEGORIES, WIDE_DAYS = 300, 200, 84  # the wide shape: ~300 × 200 × 12 weeks of cells


def events_select(rows_from: int, rows_to: int, users: int, seed: int, shape: str = "default") -> str:
    """SELECT producing events ``rows_from`` ≤ i < ``rows_to``; pure function of (i, seed, shape).

    ``shape="wide"`` (issue 19's benchmark shape): ~300 cities and 200 categories (synthetic names,
    milder skew than the default) over 12 weeks, about 700,000 candidate city × category × week
    cells at 10M events; the other columns as in the default shape."""
    cats = [c for c, _ in CATEGORIES]
    subcats = [s for _, subs in CATEGORIES for s in subs]
    sub_parent = [i for i, (_, subs) in enumerate(CATEGORIES) for _ in subs]
    cum = []
    acc = 0.0
    for name, p in EVENT_TYPES:
        acc += p
        cum.append((name, acc))
    etype = "CASE " + " ".join(f"WHEN r_type < {c:.4f} THEN '{n}'" for n, c in cum[:-1]) + f" ELSE '{cum[-1][0]}' END"
    s = int(seed)
    days = 182
    city = f"({_sql_list(CITIES)})[1 + least({len(CITIES) - 1}, floor({len(CITIES)} * pow(ru_city, 3.0)))::INT]"
    category = f"({_sql_list(cats)})[1 + ({sub_parent})[1 + sub_idx] ]"
    if shape == "wide":
        days = WIDE_DAYS
        city = (f"'City ' || lpad((least({WIDE_CITIES - 1}, floor({WIDE_CITIES} * pow(ru_city, 1.5)))::INT + 1)"
                "::VARCHAR, 3, '0')")
        category = (f"'Category ' || lpad((least({WIDE_CATEGORIES - 1}, floor({WIDE_CATEGORIES} * pow(r_cat, 1.3)))::INT"
                    " + 1)::VARCHAR, 3, '0')")
    elif shape != "default":
        raise ConfigError(f"--shape {shape!r}: use default or wide")
    return f"""
WITH base AS (
  SELECT i,
    ((xor(hash(i * 16 + 1), hash({s} * 16 + 1)) >> 11)::DOUBLE / 9007199254740992.0) AS r_user,
    ((xor(hash(i * 16 + 2), hash({s} * 16 + 2)) >> 11)::DOUBLE / 9007199254740992.0) AS r_type,
    ((xor(hash(i * 16 + 3), hash({s} * 16 + 3)) >> 11)::DOUBLE / 9007199254740992.0) AS r_time,
    ((xor(hash(i * 16 + 4), hash({s} * 16 + 4)) >> 11)::DOUBLE / 9007199254740992.0) AS r_cat,
    ((xor(hash(i * 16 + 5), hash({s} * 16 + 5)) >> 11)::DOUBLE / 9007199254740992.0) AS r_v1,
    ((xor(hash(i * 16 + 6), hash({s} * 16 + 6)) >> 11)::DOUBLE / 9007199254740992.0) AS r_v2,
    ((xor(hash(i * 16 + 7), hash({s} * 16 + 7)) >> 11)::DOUBLE / 9007199254740992.0) AS r_out
  FROM range({int(rows_from)}, {int(rows_to)}) t(i)
), ev AS (
  SELECT i, r_type, r_time, r_cat, r_v1, r_v2, r_out,
    least({int(users) - 1}, floor({int(users)} * pow(r_user, 2.5)))::BIGINT AS uid
  FROM base
), u AS (
  SELECT *,
    ((xor(hash(uid * 16 + 11), hash({s} * 16 + 11 + 8)) >> 11)::DOUBLE / 9007199254740992.0) AS ru_city,
    ((xor(hash(uid * 16 + 12), hash({s} * 16 + 12 + 8)) >> 11)::DOUBLE / 9007199254740992.0) AS ru_cat,
    xor(hash(uid * 16 + 13), hash({s} * 16 + 5)) AS hu
  FROM ev
)
SELECT
  i AS event_id,
  TIMESTAMP '2026-05-04 00:00:00' + to_microseconds((r_time * {days} * 86400 * 1e6)::BIGINT) AS event_time,
  {etype} AS event_type,
  uid + 100000 AS user_id,
  'buyer' || (uid + 100000)::VARCHAR || '@' || (['gmail.com','yahoo.co.in','rediffmail.com','outlook.com','company.in'])[1 + (hu % 5)::INT] AS email,
  '+91 ' || (6 + (hu % 4))::VARCHAR || lpad(((hu >> 8) % 1000000000)::VARCHAR, 9, '0') AS phone,
  ((hu >> 16) % 223 + 1)::VARCHAR || '.' || ((hu >> 24) % 256)::VARCHAR || '.' || ((hu >> 32) % 256)::VARCHAR || '.' || ((hu >> 40) % 254 + 1)::VARCHAR AS ip_address,
  'dev-' || lpad(to_hex((hu >> 4) % 4294967296), 8, '0') AS device_id,
  {city} AS city,
  {category} AS category,
  ({_sql_list(subcats)})[1 + sub_idx] AS subcategory,
  CASE WHEN {etype} = 'order' THEN
    round(exp(ln(4000) + 1.1 * sqrt(-2 * ln(greatest(r_v1, 1e-12))) * cos(2 * pi() * r_v2))
          * CASE WHEN r_out < 0.005 THEN 40 ELSE 1 END, 2)
  END AS order_value
FROM (
  SELECT *,
    CASE WHEN r_cat < 0.7
      THEN least({len(subcats) - 1}, floor({len(subcats)} * ru_cat))::INT
      ELSE least({len(subcats) - 1}, floor({len(subcats)} * pow(r_cat, 1.6)))::INT
    END AS sub_idx
  FROM u
)
"""


def generate_events(
    out: str | Path, *, rows: int, users: int, seed: int = 7, partitions: int = 1, threads: int | None = None,
    shape: str = "default",
) -> Path:
    """Write ``rows`` synthetic events to ``out`` (one Parquet file, or a folder of ``partitions`` files)."""
    import duckdb

    if rows < 1 or users < 1:
        raise ConfigError("--rows and --users must be at least 1")
    if partitions < 1:
        raise ConfigError("--partitions must be at least 1")
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReleaseError(f"cannot create {out.parent}: {exc.strerror}") from None
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    config = {"preserve_insertion_order": "true"}
    if threads:
        config["threads"] = str(threads)
    con = duckdb.connect(":memory:", config=config)
    try:
        if partitions == 1:
            q = events_select(0, rows, users, seed, shape)
            con.execute(f"COPY ({q}) TO '{tmp}' ({COPY_OPTIONS})")
        else:
            tmp.mkdir()
            step = -(-rows // partitions)
            for p in range(partitions):
                lo, hi = p * step, min(rows, (p + 1) * step)
                if lo >= hi:
                    break
                q = events_select(lo, hi, users, seed, shape)
                target = tmp / f"part-{p:05d}.parquet"
                con.execute(f"COPY ({q}) TO '{target}' ({COPY_OPTIONS})")
        if out.exists():
            if out.is_dir():
                shutil.rmtree(out)
            else:
                out.unlink()
        os.replace(tmp, out)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise
    finally:
        con.close()
    return out
