"""Put the keyboard focus in a text box when a page opens (the landing page's patient search)."""

from __future__ import annotations

import json

import streamlit as st

# No "<" inside the script: Streamlit's sanitizer (DOMPurify, SAFE_FOR_XML) drops a script whose text has one.
_SCRIPT = """<script>(function(){
var sel=%s, t0=Date.now(), stop=false;
function halt(){stop=true;}
document.addEventListener('mousedown',halt,{once:true,capture:true});
document.addEventListener('keydown',halt,{once:true,capture:true});
function f(){
  if(stop){return;}
  var e=document.querySelector(sel);
  if(e&&document.activeElement!==e){e.focus();}
  if(3000>Date.now()-t0){setTimeout(f,100);}
}
f();})();</script>"""


def focus_input(label: str) -> None:
    """Focus the text input labelled ``label`` as the page opens; a doctor types the ID straight away. It
    keeps the focus there while the page settles (3 s) unless the user clicks or types first. Runs once per
    page opening, not on every rerun (the element does not change)."""
    st.html(_SCRIPT % json.dumps(f'input[aria-label="{label}"]'), unsafe_allow_javascript=True)
