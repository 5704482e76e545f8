"""Plotly figures of analyses and of the questions' results; no Streamlit."""
