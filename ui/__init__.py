"""Streamlit widgets and session helpers shared by the pages (only app.py, pages/ and ui/ import Streamlit)."""
