"""Streamlit views (only this package and app.py import Streamlit); see app.py for the navigation."""
