async () => {
  // Choosing the Hands-free tab starts its microphone, with no further click, and makes sure it really runs.
  // Gradio mounts the tab's microphone when the tab is first shown and only then loads its WAV recorder in the
  // background; a Record click that comes first fails ("... is not a constructor", "audio/wav is not supported")
  // while the button already shows Stop. So: click Record once the button is there, then watch the page: the status
  // leaving "Off" (the server got the first chunks) means it runs; a recorder error, or no chunk for a while, means
  // it failed, and the tab presses Stop then Record again, a little later each time, until it runs.
  // The browser's echo cancellation mutes the user while the reply plays (it cannot tell a voice talking over the
  // reply from the reply's echo, so a barge-in is swallowed until the reply has ended): the Hands-free microphone is
  // opened without it, and the server ignores the reply's own voice instead (hands_free.py: `echo_cancelled=False`).
  if (!window.facHandsFreeMicrophone && navigator.mediaDevices?.getUserMedia) {
    window.facHandsFreeMicrophone = true;
    const open = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    const handsFreeShown = () => document.querySelector("#hands_free_mic")?.offsetParent != null;
    navigator.mediaDevices.getUserMedia = (constraints) =>
      open(constraints?.audio === true && !constraints.video && handsFreeShown() ? { audio: { echoCancellation: false } } : constraints);
  }
  if (window.facHandsFreeStarting) return; // one starter per page (choosing the tab twice)
  window.facHandsFreeStarting = true;
  const OFF = "⏸️"; // the status icon while the microphone is off (hands_free.STATES["off"])
  const NO_MICROPHONE = "🎤 No microphone found: connect one, then choose this tab again.";
  const BLOCKED = "🎤 This page may not use the microphone: allow it in the browser's site settings, then choose this tab again.";
  const NO_CHUNK_MS = 12000; // recording with nothing reaching the server for this long counts as a failure
  const GIVE_UP_MS = 90000;
  const failures = [];
  const recorderFailure = (error) =>
    /MediaRecorder|not a constructor|is not supported|mimeType|encoder/i.test(String(error?.message ?? error ?? ""));
  const onError = (event) => {
    if (recorderFailure(event.reason ?? event.error ?? event.message)) failures.push(event);
  };
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const status = () => document.querySelector("#hands_free_status");
  const isOff = () => (status()?.innerText ?? OFF).includes(OFF);
  const say = (text) => {
    const line = status()?.querySelector("p");
    if (line) line.textContent = text;
  };
  window.addEventListener("error", onError);
  window.addEventListener("unhandledrejection", onError);
  try {
    const devices = (await navigator.mediaDevices?.enumerateDevices?.()) ?? [];
    if (!devices.some((device) => device.kind === "audioinput")) return say(NO_MICROPHONE);
    const permission = await navigator.permissions?.query({ name: "microphone" }).catch(() => null);
    if (permission?.state === "denied") return say(BLOCKED);
    const started = performance.now();
    let seen = false;
    let clickedAt = null;
    let backoff = 250;
    while (performance.now() - started < GIVE_UP_MS) {
      const microphone = document.querySelector("#hands_free_mic");
      if (microphone && microphone.offsetParent !== null) seen = true;
      else if (seen) return; // the user left the tab
      if (seen && !isOff()) return; // chunks reach the server: hands-free runs
      const record = microphone?.querySelector("button.record-button");
      const stop = microphone?.querySelector("button.stop-button");
      if (record && !record.disabled) {
        failures.length = 0;
        record.click();
        clickedAt = performance.now();
      } else if (stop) {
        clickedAt ??= performance.now(); // recording was started before this starter ran
        if (failures.length || performance.now() - clickedAt > NO_CHUNK_MS) {
          stop.click(); // the recorder failed: Stop, then Record again on the next round
          clickedAt = null;
          await sleep(backoff);
          backoff = Math.min(2 * backoff, 2000);
          continue;
        }
      }
      await sleep(100);
    }
  } finally {
    window.removeEventListener("error", onError);
    window.removeEventListener("unhandledrejection", onError);
    window.facHandsFreeStarting = false;
  }
}
