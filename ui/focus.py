"""Keyboard focus in text boxes: where it starts when a page opens (the landing page's patient search), and
that what was typed in a focused box reaches the server before a page link leaves the page."""

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


# Streamlit sends a text box's value when the box loses focus, from a timer (setTimeout 0) that batches widget
# changes, but a page link sends its page change at once, naming the new page. A click on a link while the box has
# focus can therefore send the page change first and the typed value after it, naming the page being left: the
# server then opens that page again and the link looks ignored (the review page's note, issue 12). This capture
# listener holds a plain left click on a page link (sidebar or st.page_link) for a short timer scheduled after
# the blur's, so the value goes first and the page change second, as the doctor did them. Installed once per tab.
_LINKS_SCRIPT = """<script>(function(){
if(window.__cxrLinksAfterTyping){return;}
window.__cxrLinksAfterTyping=true;
var replaying=null, sel='a[data-testid="stSidebarNavLink"],a[data-testid="stPageLink-NavLink"]';
document.addEventListener('click',function(e){
  var a=e.target&&e.target.closest?e.target.closest(sel):null;
  if(!a||a===replaying||e.button!==0||e.ctrlKey||e.metaKey||e.shiftKey||e.altKey){return;}
  e.preventDefault();e.stopImmediatePropagation();
  setTimeout(function(){replaying=a;try{a.click();}finally{replaying=null;}},%d);
},true);})();</script>"""
# After the blur's 0-ms timer, whatever the nesting clamp; a click stays instant to a person.
LINK_DELAY_MS = 25


def send_typing_before_links() -> None:
    """Have page links wait for the text box being left to send its value (see ``_LINKS_SCRIPT``)."""
    st.html(_LINKS_SCRIPT % LINK_DELAY_MS, unsafe_allow_javascript=True)
