// The router's /v1 API as the page uses it, and the words a labeler reads when it fails.
//
// Every failure becomes an ApiError whose message is a sentence a person can act on: the
// API's own `detail` when it sent one (a 503 names the store that is down), otherwise a
// sentence chosen by the status, never a bare "the server answered 500".

export class ApiError extends Error {
  constructor(status, message, unavailable = false) {
    super(message);
    this.status = status;
    this.unavailable = unavailable; // the service or a store behind it is down: try again
  }
}

const BY_STATUS = {
  500: "The router failed on this request (500). Try again; if it keeps happening, tell a project admin.",
  502: "The router is unreachable behind its proxy (502). Try again in a moment.",
  503: "The router is unavailable right now (503). Try again in a moment.",
  504: "The router did not answer in time (504). Try again in a moment.",
};

export function detailText(status, body) {
  const detail = body && body.detail;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => (d && d.msg) || JSON.stringify(d)).join("; ");
  }
  return BY_STATUS[status] || `The router refused the request (${status}).`;
}

// A client bound to a token source: `call(method, path, body)` -> {status, data}.
export function client(token) {
  return async function call(method, path, body) {
    const init = { method, headers: { Authorization: `Bearer ${token()}` } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, `Cannot reach the router (${err.message}). Check the connection and try again.`, true);
    }
    if (response.status === 204) return { status: 204, data: null };
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (!response.ok) {
      const unavailable = response.status >= 502 && response.status <= 504;
      throw new ApiError(response.status, detailText(response.status, data), unavailable);
    }
    return { status: response.status, data };
  };
}
