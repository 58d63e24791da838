"""Synthetic, realistic-looking emergency-department patients for the demo seed and the benchmark.

Everything is generated from a seeded ``random.Random`` so a demo database is the same on every machine.
No real person's data: names are common given/family names combined at random, phone numbers use the
fictional 555-01xx range and e-mail addresses the reserved example.org domain.
"""

from __future__ import annotations

import random
import secrets
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta

from core import audit
from core.auth import create_user
from core.validation import normalize_name
from db import models
from db import repository as repo
from db.session import session_scope

GIVEN_NAMES: dict[str, tuple[str, ...]] = {
    "female": (
        "Mary",
        "Aisha",
        "Sofia",
        "Chloé",
        "Ingrid",
        "Mei",
        "Fatima",
        "Olivia",
        "Zoë",
        "Priya",
        "Hannah",
        "Lucía",
        "Amara",
        "Eleanor",
        "Yuki",
        "Nadia",
        "Grace",
        "Siobhan",
        "Maria",
        "Ana",
        "Leila",
        "Emma",
        "Agnieszka",
        "Chiara",
        "Noor",
        "Ruth",
        "Isabel",
        "Freya",
        "Thandiwe",
        "Margaret",
    ),
    "male": (
        "James",
        "Mohammed",
        "Luca",
        "José",
        "Henrik",
        "Wei",
        "Kwame",
        "Oliver",
        "Arjun",
        "Thomas",
        "Mateo",
        "Daniel",
        "Ibrahim",
        "Søren",
        "Kenji",
        "Patrick",
        "Samuel",
        "Piotr",
        "Ahmed",
        "Noah",
        "George",
        "Rafael",
        "Dmitri",
        "Elias",
        "Tomás",
        "William",
        "Hamza",
        "Joseph",
        "Marco",
        "Liam",
    ),
}
FAMILY_NAMES: tuple[str, ...] = (
    "Smith",
    "Johnson",
    "García",
    "Müller",
    "Nguyen",
    "Okafor",
    "Kowalski",
    "Rossi",
    "Andersson",
    "Kim",
    "Patel",
    "Brown",
    "O'Brien",
    "Haddad",
    "Tanaka",
    "Silva",
    "Jones",
    "Martin",
    "Dubois",
    "Schmidt",
    "Hernández",
    "Ivanova",
    "Mensah",
    "Chen",
    "Wilson",
    "Taylor",
    "Novak",
    "Papadopoulos",
    "Cohen",
    "Fernández",
    "Lindqvist",
    "Walsh",
    "Khan",
    "Yilmaz",
    "Davies",
    "Moreau",
    "Van der Berg",
    "Costa",
    "Nakamura",
    "Adeyemi",
    "Murphy",
    "Lopez",
    "Hughes",
    "Bianchi",
    "Jansen",
    "Singh",
    "Ali",
    "Evans",
    "Kaur",
    "Thompson",
    "Robinson",
    "Clarke",
    "Wright",
    "Baker",
    "Santos",
    "Abdi",
    "Horvat",
    "Dimitrov",
)
STREETS: tuple[str, ...] = (
    "Elm Street",
    "Harbour Road",
    "Station Avenue",
    "Mill Lane",
    "Church Street",
    "Park Crescent",
    "Victoria Road",
    "Orchard Way",
    "High Street",
    "Riverside Drive",
    "Maple Court",
    "Quarry Hill",
)
TOWNS: tuple[str, ...] = ("Springfield", "Riverton", "Lakeside", "Fairview", "Kingsbridge", "Ashford")

VISIT_REASONS: tuple[tuple[str, str], ...] = (
    ("Shortness of breath", "SpO2 91% on air, RR 24. Bilateral wheeze. CXR requested."),
    (
        "Chest pain",
        "Central chest pain 2 h, non-radiating. ECG sinus rhythm, troponin pending. CXR requested.",
    ),
    ("Fever and productive cough", "T 38.6 °C, 5 days of green sputum. Crackles right base. ?Pneumonia."),
    ("Fall from standing height", "Left-sided rib pain, tender 7th-9th ribs. CXR to exclude pneumothorax."),
    ("Road traffic collision", "Restrained driver, seat-belt sign across chest. Trauma series."),
    ("Asthma exacerbation", "PEF 45% predicted. Nebulised salbutamol x3, oral prednisolone."),
    ("COPD exacerbation", "Increased breathlessness and sputum. ABG: pH 7.33, pCO2 6.9 kPa."),
    ("Haemoptysis", "Two episodes of fresh blood-streaked sputum. 30 pack-year smoker. CXR, CT if abnormal."),
    ("Palpitations", "Irregularly irregular pulse 130. New AF? Rate control started."),
    ("Syncope", "Witnessed collapse at home, brief. Lying/standing BP, ECG, bloods."),
    ("Pleuritic chest pain", "Sharp pain on inspiration, Wells score 2. D-dimer requested."),
    ("Choking episode", "Felt food stuck, now resolved. No stridor. CXR for foreign body."),
    ("Post-operative check", "Day 3 after laparotomy, new low-grade fever. Wound clean."),
    ("Sickle cell crisis", "Chest pain and fever. ?Acute chest syndrome. Analgesia, O2, CXR."),
    ("Assault", "Blunt trauma to the chest. No distress. CXR to exclude rib fractures."),
    ("Stab wound, left chest", "Small wound 5th intercostal space. Haemodynamically stable. Urgent CXR."),
)
DRUG_ALLERGIES: tuple[tuple[str, str], ...] = (
    ("Penicillin", "Urticarial rash"),
    ("Amoxicillin", "Generalised rash"),
    ("Sulfonamides", "Stevens-Johnson syndrome (2009)"),
    ("Aspirin", "Bronchospasm"),
    ("Ibuprofen", "Angioedema of lips"),
    ("Codeine", "Severe nausea and vomiting"),
    ("Morphine", "Pruritus"),
    ("Iodinated contrast media", "Hypotension and urticaria"),
    ("Cephalosporins", "Anaphylaxis"),
    ("Vancomycin", "Red man syndrome"),
    ("Clarithromycin", "Diarrhoea"),
)
FOOD_ALLERGIES: tuple[tuple[str, str], ...] = (
    ("Peanuts", "Anaphylaxis, carries adrenaline auto-injector"),
    ("Shellfish", "Facial swelling"),
    ("Eggs", "Hives"),
    ("Cow's milk", "Abdominal cramps"),
    ("Tree nuts", "Throat tightness"),
    ("Sesame", "Itchy mouth"),
)
OTHER_ALLERGIES: tuple[tuple[str, str], ...] = (
    ("Latex", "Contact dermatitis"),
    ("Adhesive dressings", "Blistering"),
    ("Bee stings", "Anaphylaxis"),
)
CONDITIONS: tuple[tuple[str, str], ...] = (
    ("Chronic obstructive pulmonary disease", "GOLD stage 2, home inhalers."),
    ("Asthma", "Uses salbutamol and beclometasone inhalers."),
    ("Type 2 diabetes mellitus", "On metformin; last HbA1c 58 mmol/mol."),
    ("Hypertension", "On amlodipine."),
    ("Heart failure with reduced ejection fraction", "EF 35% on last echo."),
    ("Atrial fibrillation", "Anticoagulated with apixaban."),
    ("Chronic kidney disease stage 3", "eGFR 42; caution with contrast."),
    ("Pulmonary tuberculosis", "Completed 6-month treatment."),
    ("Sarcoidosis", "Bilateral hilar lymphadenopathy on previous films."),
    ("Interstitial lung disease", "Under respiratory follow-up."),
    ("Sickle cell disease", "HbSS; two previous acute chest syndromes."),
    ("Lung adenocarcinoma", "Right upper lobectomy; in remission."),
)
SPECIAL_NOTES: tuple[str, ...] = (
    "Hard of hearing: face the patient and speak clearly.",
    "Declines blood products (Jehovah's Witness); advance directive on file.",
    "Interpreter needed: Portuguese.",
    "Pacemaker in situ (MRI conditional).",
    "Do-not-resuscitate order on file, reviewed with family.",
    "Needle phobia: topical anaesthetic before cannulation.",
    "Pregnant (second trimester): shield abdomen for radiographs.",
    "Lives alone; daughter is next of kin.",
)


@dataclass
class SyntheticPatient:
    """One generated patient: demographics plus history, ready for the ORM or a bulk insert."""

    patient_id: str
    given_name: str
    family_name: str
    sex: str
    date_of_birth: date
    phone: str
    email: str
    address: str
    special_notes: str
    visits: list[tuple[date, str, str]] = field(default_factory=list)
    allergies: list[tuple[str, str, str, str, date]] = field(default_factory=list)  # substance, kind, ...
    conditions: list[tuple[str, date | None, str, str]] = field(default_factory=list)


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii() and (c.isalnum() or c in ".-")).lower()


def _random_date(rng: random.Random, start: date, end: date) -> date:
    return start + timedelta(days=rng.randrange(max(1, (end - start).days + 1)))


def synthetic_patients(
    count: int,
    *,
    seed: int = 20240101,
    id_prefix: str = "ED",
    first_number: int = 100001,
    with_history: bool = True,
    today: date | None = None,
) -> Iterator[SyntheticPatient]:
    """Yield ``count`` patients with IDs ``{id_prefix}-{number}`` (numbers from ``first_number``).

    ``with_history=False`` skips visits, allergies and conditions (the benchmark's 100,000 rows).
    """
    rng = random.Random(seed)
    today = today or date.today()
    for number in range(first_number, first_number + count):
        sex = rng.choices(("female", "male", "other", "unknown"), weights=(49, 49, 1, 1))[0]
        given = rng.choice(GIVEN_NAMES[sex if sex in GIVEN_NAMES else rng.choice(("female", "male"))])
        family = rng.choice(FAMILY_NAMES)
        dob = _random_date(rng, date(1928, 1, 1), today - timedelta(days=365))
        patient = SyntheticPatient(
            patient_id=f"{id_prefix}-{number}",
            given_name=given,
            family_name=family,
            sex=sex,
            date_of_birth=dob,
            phone=f"+1 555 01{rng.randrange(100):02d} {rng.randrange(10000):04d}",
            email=f"{_ascii(given)}.{_ascii(family)}@example.org" if rng.random() < 0.6 else "",
            address=f"{rng.randrange(1, 200)} {rng.choice(STREETS)}, {rng.choice(TOWNS)}",
            special_notes=rng.choice(SPECIAL_NOTES) if rng.random() < 0.25 else "",
        )
        age = (today - dob).days // 365
        if patient.special_notes.startswith("Pregnant") and not (sex == "female" and 16 <= age <= 45):
            patient.special_notes = ""
        if with_history:
            _add_history(rng, patient, today)
        yield patient


def _add_history(rng: random.Random, patient: SyntheticPatient, today: date) -> None:
    earliest = max(patient.date_of_birth, today - timedelta(days=5 * 365))
    for _ in range(rng.randint(1, 5)):
        reason, note = rng.choice(VISIT_REASONS)
        patient.visits.append((_random_date(rng, earliest, today), reason, note))
    used: set[str] = set()
    for _ in range(rng.choices((0, 1, 2, 3), weights=(45, 35, 15, 5))[0]):
        kind = rng.choices(("drug", "food", "other"), weights=(70, 22, 8))[0]
        pool = {"drug": DRUG_ALLERGIES, "food": FOOD_ALLERGIES, "other": OTHER_ALLERGIES}[kind]
        substance, reaction = rng.choice(pool)
        if substance in used:
            continue
        used.add(substance)
        severity = (
            "life-threatening" if "naphylaxis" in reaction else rng.choice(("mild", "moderate", "severe"))
        )
        recorded = _random_date(rng, max(patient.date_of_birth, date(2000, 1, 1)), today)
        patient.allergies.append((substance, kind, reaction, severity, recorded))
    age = (today - patient.date_of_birth).days // 365
    for name, note in rng.sample(
        CONDITIONS, k=rng.choices((0, 1, 2), weights=(40, 40, 20))[0] if age > 18 else 0
    ):
        onset = (
            _random_date(rng, patient.date_of_birth + timedelta(days=18 * 365), today)
            if rng.random() < 0.8
            else None
        )
        status = "resolved" if "treatment" in note or "remission" in note else "active"
        patient.conditions.append((name, onset, status, note))


# ------------------------------------------------------------------ writing the demo database

DEMO_ACCOUNTS: tuple[tuple[str, str, str], ...] = (
    ("demo", "doctor", "Dr Demo (synthetic data)"),
    ("admin", "admin", "Demo administrator"),
)


@dataclass(frozen=True)
class SeedResult:
    """What a seed run did; ``accounts`` maps a username to its new password, or ``None`` if it existed."""

    patients_added: int
    accounts: dict[str, str | None]
    skipped_reason: str = ""


class SeedRefused(Exception):
    """The database already holds patients and the caller did not ask for ``if_empty``."""


def seed_demo(count: int = 50, *, if_empty: bool = False, seed: int = 20240101) -> SeedResult:
    """Fill an empty, migrated database with ``count`` synthetic patients and the demo accounts.

    Each account gets a fresh random password (returned once; only its hash is stored) unless the username
    already exists. With ``if_empty`` a database that has patients is left alone; without it that is a
    ``SeedRefused`` error, since generated IDs would collide with the existing ones.
    """
    with session_scope() as session:
        existing = repo.count_patients(session)
    if existing:
        reason = f"the database already has {existing} patients"
        if if_empty:
            return SeedResult(0, {}, skipped_reason=reason)
        raise SeedRefused(f"Not seeding: {reason}. Use --if-empty to skip silently.")
    accounts: dict[str, str | None] = {}
    for username, role, full_name in DEMO_ACCOUNTS:
        with session_scope() as session:
            taken = repo.get_user_by_username(session, username) is not None
        if taken:
            accounts[username] = None
            continue
        password = secrets.token_urlsafe(12)  # 16 characters, ~96 bits
        create_user(username, password, role=role, full_name=full_name)
        accounts[username] = password
    with session_scope() as session:
        for p in synthetic_patients(count, seed=seed):
            patient = models.Patient(
                patient_id=p.patient_id,
                given_name=p.given_name,
                family_name=p.family_name,
                given_norm=normalize_name(p.given_name),
                family_norm=normalize_name(p.family_name),
                sex=p.sex,
                date_of_birth=p.date_of_birth,
                phone=p.phone,
                email=p.email,
                address=p.address,
                special_notes=p.special_notes,
            )
            patient.visits = [models.Visit(visit_date=d, reason=r, notes=n) for d, r, n in p.visits]
            patient.allergies = [
                models.Allergy(substance=s, kind=k, reaction=r, severity=sev, recorded_on=on)
                for s, k, r, sev, on in p.allergies
            ]
            patient.conditions = [
                models.ChronicCondition(name=n, onset_date=on, status=st, notes=note)
                for n, on, st, note in p.conditions
            ]
            session.add(patient)
        session.flush()
        audit.write(
            session,
            audit.SYSTEM,
            "seed",
            "patient",
            detail=f"seeded {count} synthetic demo patients (random seed {seed})",
        )
    return SeedResult(count, accounts)
