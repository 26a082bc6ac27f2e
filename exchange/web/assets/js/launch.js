// Launched from the HIS: /ui/launch?token=… is redeemed (once) for the clinician's session with the patient and
// encounter as its context; the token is then dropped from the address bar and the history.
import { announce, api, errorText, header, loadMessages, t } from "./common.js";

async function main() {
  const token = new URLSearchParams(location.search).get("token");
  history.replaceState(null, "", "/ui/launch");
  // The redemption does not wait for the messages: they are only needed if it fails.
  const redeemed = token ? api("POST", "/api/v1/launch/session", { token }).catch((error) => error) : null;
  await loadMessages();
  header(null);
  if (!token) {
    announce(t("launch.no_token"), "error");
    return;
  }
  announce(t("launch.redeeming"));
  try {
    const session = await redeemed;
    if (session instanceof Error) throw session;
    sessionStorage.clear();
    sessionStorage.setItem("hrx.csrf", session.csrf_token);
    sessionStorage.setItem("hrx.context", JSON.stringify({ ...session.context, launched: true }));
    location.replace("/ui/clinician");
  } catch (error) {
    announce(errorText(error), "error");
  }
}

main();
