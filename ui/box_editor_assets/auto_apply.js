// Added to streamlit-image-annotation's detection editor (ui/box_editor.py): press the editor's own
// "Complete" button after every change the doctor makes (drawing, moving, resizing, deleting or relabelling a
// box), so the boxes on the canvas are always the boxes a save stores. Without it the editor hands its boxes
// back only when Complete is pressed, and boxes drawn without it were silently dropped.
(function () {
  var pending = null;
  function apply() {
    pending = null;
    var buttons = document.querySelectorAll("button");
    for (var i = 0; i < buttons.length; i++) {
      if (buttons[i].textContent.trim() === "Complete") {
        buttons[i].click();
        return;
      }
    }
  }
  function later() {
    // After React has re-rendered with the change (the button's handler reads the latest boxes).
    if (pending !== null) clearTimeout(pending);
    pending = setTimeout(apply, 80);
  }
  ["mouseup", "pointerup", "touchend", "change", "keyup"].forEach(function (name) {
    window.addEventListener(
      name,
      function (event) {
        var target = event.target;
        if (target && target.tagName === "BUTTON") return; // Complete itself (and no other button) sends already
        later();
      },
      true
    );
  });
})();
