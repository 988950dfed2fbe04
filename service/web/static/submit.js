// The submit page: the form alone.
import { attachSubmitForm } from "./submitform.js";

const live = document.getElementById("live-state");
attachSubmitForm(document.getElementById("submit-form"))
  .then(() => { live.textContent = "Ready"; })
  .catch((error) => { live.textContent = `Cannot load the programs (${error.message})`; });
