"""lmtt dashboard entry point (minimal: the prediction for a prompt)."""

import streamlit as st

import lmtt

st.set_page_config(page_title="lmtt", layout="wide")


@st.cache_resource(show_spinner="Loading the model...")
def runner(name: str | None) -> lmtt.ModelRunner:
    return lmtt.load_model(name)


config = lmtt.load_config()
prompt = st.text_input("Prompt", config.sample_prompts[0] if config.sample_prompts else "The capital of France is")
if st.button("Run"):
    analysis = lmtt.analyze(runner(config.default_model), prompt)
    st.dataframe([{"token": p.token, "prob": p.score} for p in analysis.predictions()])
