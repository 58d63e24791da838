"""Persistence: SQLAlchemy models, sessions and repository functions. Never imports Streamlit."""
