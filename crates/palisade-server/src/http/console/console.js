// Palisade console: every action is a call of the JSON API.
//
// A <form data-api="/api/v1/..." data-method="PUT"> is sent as JSON with the
// session cookie and the session's CSRF token. Inputs become fields; an
// input with data-list becomes an array (split on blanks and commas), with
// data-json is parsed as JSON, a checkbox is a boolean, and empty inputs are
// left out. On success the page reloads, or, with data-show, the answer is
// shown in #result. A refusal shows the API's message in #flash.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

async function api(method, url, body) {
  const init = {
    method,
    credentials: "same-origin",
    headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (response.status === 401) {
    location.href = "/console/login";
    throw new Error("signed out");
  }
  if (!response.ok) {
    throw new Error((data && data.error) || `${response.status} ${response.statusText}`);
  }
  return data;
}

function flash(message, ok) {
  const el = document.getElementById("flash");
  if (!el) return;
  el.textContent = message;
  el.className = ok ? "ok" : "error";
}

function formBody(form) {
  const body = {};
  for (const el of form.elements) {
    if (!el.name || el.disabled) continue;
    if (el.type === "checkbox") {
      body[el.name] = el.checked;
      continue;
    }
    const value = el.value.trim();
    if (value === "") continue;
    if ("list" in el.dataset) body[el.name] = value.split(/[\s,]+/).filter(Boolean);
    else if ("json" in el.dataset) body[el.name] = JSON.parse(value);
    else if ("int" in el.dataset) body[el.name] = Number(value);
    else body[el.name] = value;
  }
  return body;
}

const shows = {
  totp(data, out) {
    out.innerHTML = "";
    const qr = document.createElement("div");
    qr.className = "qr";
    // Our own server's SVG (palisade-authn's QR renderer), no script in it.
    qr.innerHTML = data.qr_svg;
    const secret = document.createElement("p");
    secret.textContent = `Or type this secret into the app: ${data.secret}`;
    secret.id = "totp-secret";
    secret.dataset.secret = data.secret;
    out.append(qr, secret);
    document.getElementById("totp-confirm")?.removeAttribute("hidden");
  },
  codes(data, out) {
    out.innerHTML = "";
    const p = document.createElement("p");
    p.textContent = "Two-factor authentication is on. Keep these recovery codes somewhere safe: each signs in once instead of a code, and they are not shown again.";
    const list = document.createElement("ul");
    list.id = "recovery-codes";
    for (const code of data.codes) {
      const li = document.createElement("li");
      li.textContent = code;
      list.append(li);
    }
    out.append(p, list);
    document.getElementById("totp-confirm")?.setAttribute("hidden", "");
  },
  link(data, out) {
    out.innerHTML = "";
    const p = document.createElement("p");
    p.textContent = "Send this one-time link to the admin (it works once, until " +
      new Date(data.expires_ms).toISOString() + "):";
    const code = document.createElement("code");
    code.id = "invite-url";
    code.textContent = data.url;
    out.append(p, code);
  },
  token(data, out) {
    out.innerHTML = "";
    const p = document.createElement("p");
    p.textContent = "The new token (shown once):";
    const code = document.createElement("code");
    code.id = "new-token";
    code.textContent = data.token;
    out.append(p, code);
  },
};

document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.dataset.api) return;
  event.preventDefault();
  const method = form.dataset.method || "POST";
  let body;
  try {
    body = method === "DELETE" ? undefined : formBody(form);
  } catch (err) {
    flash(`Invalid input: ${err.message}`, false);
    return;
  }
  for (const b of form.querySelectorAll("button")) b.disabled = true;
  try {
    const data = await api(method, form.dataset.api, body);
    const out = document.getElementById("result");
    if (form.dataset.show && shows[form.dataset.show] && out) {
      shows[form.dataset.show](data, out);
      flash("Done.", true);
    } else {
      sessionStorage.setItem("palisade-flash", form.dataset.done || "Done.");
      location.reload();
    }
  } catch (err) {
    flash(err.message, false);
  } finally {
    for (const b of form.querySelectorAll("button")) b.disabled = false;
  }
});

// Live updates of the events table: long-poll the events API for rows
// newer than the newest shown, with the page's filters.
async function follow(table) {
  let after = Number(table.dataset.after || 0);
  const params = new URLSearchParams(table.dataset.filter || "");
  const body = table.tBodies[0];
  for (;;) {
    params.set("after", String(after));
    params.set("wait_ms", "20000");
    let page;
    try {
      page = await api("GET", `/api/v1/events?${params}`);
    } catch (err) {
      flash(`Live updates stopped: ${err.message}`, false);
      return;
    }
    for (const rec of page.events) {
      const e = rec.event;
      const tr = document.createElement("tr");
      tr.className = `kind-${e.kind} live`;
      const cells = [
        new Date(rec.received_ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z"),
        rec.computer,
        e.kind,
        e.path,
        e.process && e.process.exe ? e.process.exe.path : "",
        e.reason,
      ];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (i >= 3 && i <= 4) td.className = "mono"; // path, process
        tr.append(td);
      });
      if (e.sha256) {
        const a = document.createElement("a");
        a.href = `/console/files/${e.sha256}`;
        a.textContent = e.sha256.slice(0, 12);
        const td = document.createElement("td");
        td.className = "mono";
        td.append(a);
        tr.insertBefore(td, tr.children[4]);
      } else {
        tr.insertBefore(document.createElement("td"), tr.children[4]);
      }
      body.insertBefore(tr, body.firstChild);
    }
    after = page.last_id > after ? page.last_id : after;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const message = sessionStorage.getItem("palisade-flash");
  if (message) {
    sessionStorage.removeItem("palisade-flash");
    flash(message, true);
  }
  for (const table of document.querySelectorAll("table[data-live]")) follow(table);
});
