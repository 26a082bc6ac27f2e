// The login page of clinicians, operators and auditors: a web session (cookie) and its CSRF token.
import { announce, api, errorText, header, loadMessages, t } from "./common.js";

const HOME = { clinician: "/ui/clinician", auditor: "/ui/auditor", operator: "/ui/operator" };

async function main() {
  await loadMessages();
  header(null);
  document.getElementById("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const body = { username: form.username.value.trim(), password: form.password.value };
    if (form.totp.value.trim()) body.totp = form.totp.value.trim();
    announce(t("login.signing_in"));
    try {
      const session = await api("POST", "/api/v1/auth/login", body);
      sessionStorage.clear();
      sessionStorage.setItem("hrx.csrf", session.csrf_token);
      const home = HOME[session.principal.role];
      if (!home) {
        announce(t("login.no_page_for_role"), "error");
        return;
      }
      // Back to the page that asked for the login (only a page of this site), else the role's own page.
      const next = new URLSearchParams(location.search).get("next") || "";
      location.assign(/^\/ui\/[\w/%.-]*$/.test(next) && session.principal.role === "clinician" ? next : home);
    } catch (error) {
      form.password.value = "";
      announce(errorText(error), "error");
    }
  });
}

main();
