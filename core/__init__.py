"""Core of the chest X-ray assistant: settings, imaging, models and use cases. Never imports Streamlit."""
