"""Referrals between emergency departments: the sites (sites.py), the proposal rule (rule.py), the referral and
its answers (service.py), and the FHIR route to an outside installation (fhir.py). No Streamlit here."""
